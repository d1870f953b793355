/*
 * test_worker_hostile.c - what a producer other than the gateway can put on the worker's
 * topics, and what the worker makes of it: nothing crashes or stalls, every record is
 * consumed, each one it cannot use is counted by reason, every output record is valid JSON,
 * and the state topic's garbage is counted and skipped at restore.
 *
 * Before the worker starts, the state topic gets garbage: snapshots that do not decode, keys
 * of other partitions or none, markers that are not offsets (text, negative, beyond 2^63),
 * a storm of tombstones. Then the input topic gets the normal fleet (more devices than
 * [engine] max_series admits) mixed with records the gateway never writes: wrong or missing
 * content-type, truncated CBOR, NaN, 1e308, too many metrics, device ids of 64 KiB or with
 * quotes, event times at the int64 extremes and in 1969 and 2300, empty and null values, and
 * metric names with quotes, backslashes and non-ASCII letters that must be escaped in the
 * alert and aggregate JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec_canonical.h"
#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS WFX_PARTITIONS
#define DEVICES 40
#define SECONDS 180
#define MAX_SERIES 30

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    if (msg->err)
        (*(int *)opaque)++;
}

static rd_kafka_t *producer(const char *bs, int *failed)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bs, errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_opaque(conf, failed);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk)
        fail_msg("rd_kafka_new: %s", errstr);
    return rk;
}

/* One record; key/value NULL for none; ctype NULL for no header. */
static void put(rd_kafka_t *rk, const char *topic, int32_t partition, const void *key,
                 size_t key_len, const void *value, size_t len, const char *ctype)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
    if (ctype)
        rd_kafka_header_add(hdrs, "content-type", -1, ctype, -1);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(key, key ? key_len : 0), RD_KAFKA_V_VALUE((void *)value, value ? len : 0),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(hdrs);
        fail_msg("produce: %s", rd_kafka_err2str(e));
    }
}

static void finish(rd_kafka_t *rk, const int *failed)
{
    assert_int_equal(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(*failed, 0);
    rd_kafka_destroy(rk);
}

/* Garbage on every partition of the state topic; returns how many records of it the worker
 * must count as state restore errors (at least). */
static int poison_state(const char *bs, const char *topic)
{
    int failed = 0, bad = 0;
    rd_kafka_t *rk = producer(bs, &failed);
    char key[128], val[64];
    for (int32_t p = 0; p < PARTITIONS; p++) {
        /* Snapshots that do not decode: random bytes, one byte, empty. */
        uint8_t junk[300];
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)(i * 131 + (size_t)p * 7);
        int n = snprintf(key, sizeof key, "%" PRId32 "/dev-000/temp", p);
        put(rk, topic, p, key, (size_t)n, junk, sizeof junk, NULL);
        n = snprintf(key, sizeof key, "%" PRId32 "/dev-001/temp", p);
        put(rk, topic, p, key, (size_t)n, junk, 1, NULL);
        n = snprintf(key, sizeof key, "%" PRId32 "/", p);
        put(rk, topic, p, key, (size_t)n, junk, 7, NULL);
        bad += p < 3 ? 3 : 0; /* applied only where a valid marker follows (below) */
        /* Keys of another partition, and none. */
        n = snprintf(key, sizeof key, "%" PRId32 "/dev-002/temp", (p + 1) % PARTITIONS);
        put(rk, topic, p, key, (size_t)n, junk, sizeof junk, NULL);
        put(rk, topic, p, NULL, 0, junk, 10, NULL);
        bad += 2;
        /* A tombstone storm for series that never existed. */
        for (int i = 0; i < 2000; i++) {
            n = snprintf(key, sizeof key, "%" PRId32 "/ghost-%d/temp", p, i);
            put(rk, topic, p, key, (size_t)n, NULL, 0, NULL);
        }
        /* Markers that are not offsets. The last one decides where a restore resumes: on
         * partitions 0-2 a valid 0 (so the garbage above is applied and refused); on 3 and 4
         * a number beyond int64, on 5 an offset far beyond the input's end (as a state topic
         * kept while the input topic was recreated has), neither of which may send the worker
         * past every record of the partition. */
        static const char *const bad_markers[] = {"abc", "-5", "", "12x"};
        for (size_t i = 0; i < sizeof bad_markers / sizeof bad_markers[0]; i++) {
            n = snprintf(key, sizeof key, "%" PRId32 "/@offset", p);
            put(rk, topic, p, key, (size_t)n, bad_markers[i], strlen(bad_markers[i]), NULL);
            bad++;
        }
        n = snprintf(key, sizeof key, "%" PRId32 "/@offset", p);
        int vn = snprintf(val, sizeof val, "%s", p < 3 ? "0" : p < 5 ? "9223372036854775808" : "1000000");
        put(rk, topic, p, key, (size_t)n, val, (size_t)vn, NULL);
        bad += p < 3 ? 0 : 1;
    }
    finish(rk, &failed);
    return bad;
}

/* A canonical JSON record of one reading (the gateway's own encoder). */
static size_t json_reading(char *buf, size_t cap, const char *device, int64_t ts,
                           const struct tg_metric *m, size_t n)
{
    struct tg_reading rd = {.device = device, .has_seq = true, .boot = 1, .seq = 1,
                            .ts_ms = ts, .n_metrics = n, .metrics = (struct tg_metric *)m};
    size_t len = 0;
    assert_int_equal(tg_codec_canonical_json(&rd, "gw-test", ts, buf, cap, &len), TG_OK);
    return len;
}

struct hostile_counts {
    int invalid;  /* records the worker must count in records_invalid_total */
    int total;    /* records produced */
};

static void hostile_input(const char *bs, int64_t base, struct hostile_counts *hc)
{
    int failed = 0;
    rd_kafka_t *rk = producer(bs, &failed);
    static char buf[1 << 20];
    size_t len;
    struct tg_metric m = {.name = "temp", .value = 21.5};
    const char *json = "application/json", *cbor = "application/cbor";
#define SEND(key, v, l, ct, is_invalid)                                                          \
    do {                                                                                       \
        put(rk, "telemetry", RD_KAFKA_PARTITION_UA, key, strlen(key), v, l, ct);              \
        hc->total++;                                                                           \
        hc->invalid += (is_invalid);                                                           \
    } while (0)
    /* Event times of the second minute: late where the fleet's first 90 s went before. */
    for (int round = 0; round < 5; round++) {
        int64_t ts = base + 60000 + round * 1000;
        /* Valid JSON without a content-type: sniffed and used. */
        len = json_reading(buf, sizeof buf, "odd-1", ts, &m, 1);
        SEND("odd-1", buf, len, NULL, 0);
        /* JSON labelled CBOR, garbage labelled text/plain. */
        SEND("odd-2", buf, len, cbor, 1);
        SEND("odd-3", "\x01\x02garbage", 9, "text/plain", 1);
        /* Truncated CBOR: every prefix of one record would be too many; a few cuts. */
        uint8_t cb[512];
        struct tg_reading rd = {.device = "odd-4", .ts_ms = ts, .n_metrics = 1, .metrics = &m};
        assert_int_equal(tg_codec_canonical_cbor(&rd, "gw-test", ts, cb, sizeof cb, &len),
                         TG_OK);
        SEND("odd-4", cb, len / 2, cbor, 1);
        SEND("odd-4", cb, 1, cbor, 1);
        SEND("odd-4", cb, len - 1, NULL, 1);
        /* NaN literal, 1e308, a value beyond what the engine scores. */
        int n = snprintf(buf, sizeof buf,
                         "{\"device\":\"odd-5\",\"ts\":%" PRId64 ",\"m\":{\"t\":NaN}}", ts);
        SEND("odd-5", buf, (size_t)n, json, 1);
        n = snprintf(buf, sizeof buf,
                     "{\"device\":\"odd-5\",\"ts\":%" PRId64 ",\"m\":{\"t\":1e308}}", ts);
        SEND("odd-5", buf, (size_t)n, json, 1);
        n = snprintf(buf, sizeof buf,
                     "{\"device\":\"odd-5\",\"ts\":%" PRId64 ",\"m\":{\"t\":1e999}}", ts);
        SEND("odd-5", buf, (size_t)n, json, 1);
        /* 10,000 metrics in one record. */
        n = snprintf(buf, sizeof buf, "{\"device\":\"odd-6\",\"ts\":%" PRId64 ",\"m\":{", ts);
        for (int i = 0; i < 10000; i++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"m%d\":%d", i ? "," : "", i, i);
        n += snprintf(buf + n, sizeof buf - (size_t)n, "}}");
        SEND("odd-6", buf, (size_t)n, json, 1);
        /* A device id of 64 KiB, and one with a quote and a control character. */
        n = snprintf(buf, sizeof buf, "{\"device\":\"");
        for (int i = 0; i < 65536; i++)
            buf[n++] = 'd';
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\",\"ts\":%" PRId64 ",\"m\":{\"t\":1}}",
                      ts);
        SEND("odd-7", buf, (size_t)n, json, 1);
        n = snprintf(buf, sizeof buf,
                     "{\"device\":\"a\\\"b\\u0001\",\"ts\":%" PRId64 ",\"m\":{\"t\":1}}", ts);
        SEND("odd-7", buf, (size_t)n, json, 1);
        /* Event times at the int64 extremes (refused), in 1969 and in 2300 (taken: the
         * gateway's clock check is where skew is bounded). */
        n = snprintf(buf, sizeof buf,
                     "{\"device\":\"odd-8\",\"ts\":9223372036854775807,\"m\":{\"t\":1}}");
        SEND("odd-8", buf, (size_t)n, json, 1);
        n = snprintf(buf, sizeof buf,
                     "{\"device\":\"odd-8\",\"ts\":-9223372036854775808,\"m\":{\"t\":1}}");
        SEND("odd-8", buf, (size_t)n, json, 1);
        len = json_reading(buf, sizeof buf, "odd-9", -1000 - round, &m, 1);
        SEND("odd-9", buf, len, json, 0);
        /* Dated 2300, two days and two hours ahead: refused ([worker] max_future_ms), or their
         * partition's watermark would jump there, the rest of its input be late and its
         * series evicted as idle. */
        len = json_reading(buf, sizeof buf, "odd-12", INT64_C(10413792000000), &m, 1);
        SEND("odd-12", buf, len, json, 1);
        len = json_reading(buf, sizeof buf, "odd-12", ts + 2 * 86400000LL, &m, 1);
        SEND("odd-12", buf, len, json, 1);
        len = json_reading(buf, sizeof buf, "odd-12", wall_ms() + 2 * 3600000LL, &m, 1);
        SEND("odd-12", buf, len, json, 1);
        /* Empty and null values. */
        SEND("odd-10", "", 0, json, 1);
        SEND("odd-10", NULL, 0, cbor, 1);
    }
    /* Metric names that need escaping in the output JSON (a quote, a backslash, a non-ASCII
     * letter): a steady series each, then a spike on the first: aggregated and alerted under
     * their names. Ten a second within seconds 84-90, the last ones before this input: not
     * late, and moving no partition's watermark past the fleet's next readings. */
    for (int i = 0; i < 60; i++) {
        double v = 20 + (i % 3) * 0.1;
        struct tg_metric odd[3] = {{.name = "q\"uote", .value = i == 50 ? 1e5 : v},
                                   {.name = "back\\slash", .value = v},
                                   {.name = "temp\xc3\xa9rature", .value = v}};
        len = json_reading(buf, sizeof buf, "odd-11", base + 84000 + i * 100, odd, 3);
        SEND("odd-11", buf, len, json, 0);
    }
#undef SEND
    finish(rk, &failed);
}

static double sum_family(const char *body, const char *family)
{
    double sum = 0;
    size_t fl = strlen(family);
    for (const char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, family, fl) == 0 && (l[fl] == '{' || l[fl] == ' ')) {
            const char *v = strchr(l, ' ');
            if (v)
                sum += strtod(v + 1, NULL);
        }
    }
    return sum;
}

struct consumed_ctx {
    const struct wfx_worker *w;
    double want;
};

static bool consumed_all(void *ud)
{
    struct consumed_ctx *cc = ud;
    char *body = wfx_scrape(cc->w);
    double got = wfx_metric(body, "tidegate_worker_records_consumed_total");
    free(body);
    return got >= cc->want;
}

struct series_ctx {
    const struct wfx_worker *w;
    double want;
};

static bool series_at_least(void *ud)
{
    struct series_ctx *sc = ud;
    char *body = wfx_scrape(sc->w);
    double got = wfx_metric(body, "tidegate_worker_series");
    double refused = wfx_metric(body, "tidegate_worker_series_refused_total");
    free(body);
    return got >= sc->want && refused > 0;
}

/* Aggregates of the normal fleet ("dev-*") and how many of them hold a whole minute (60
 * readings): all of them should, whatever partition a device is in. */
static void fleet_windows(const char *bs, size_t *windows, size_t *whole)
{
    size_t n;
    char **recs = wfx_read_all(bs, "a.agg", &n);
    *windows = *whole = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(recs[i], "dev-", 4) != 0)
            continue;
        json_t *doc = json_loads(strchr(recs[i], '\t') + 1, 0, NULL);
        assert_non_null(doc);
        (*windows)++;
        bool is_whole = json_integer_value(json_object_get(doc, "count")) == 60;
        if (!is_whole)
            fprintf(stderr, "not a whole minute: %s\n", recs[i]);
        *whole += is_whole;
        json_decref(doc);
    }
    wfx_records_free(recs, n);
}

/* Fails unless every record of topic is a JSON object; returns their number, and in
 * *with_metric how many have "metric" equal to metric. */
static size_t assert_all_json(const char *bs, const char *topic, const char *metric,
                              size_t *with_metric)
{
    size_t n;
    char **recs = wfx_read_all(bs, topic, &n);
    *with_metric = 0;
    for (size_t i = 0; i < n; i++) {
        const char *tab = strchr(recs[i], '\t');
        assert_non_null(tab);
        json_error_t je;
        json_t *doc = json_loads(tab + 1, 0, &je);
        if (!doc || !json_is_object(doc))
            fail_msg("%s: not a JSON object (%s): %s", topic, je.text, recs[i]);
        const char *m = json_string_value(json_object_get(doc, "metric"));
        *with_metric += m && strcmp(m, metric) == 0;
        json_decref(doc);
    }
    wfx_records_free(recs, n);
    return n;
}

static void test_hostile_records_are_counted_not_fatal(void **state)
{
    (void)state;
    struct wfx_cluster *cl = wfx_cluster_start(false);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-hostile");
    assert_non_null(dir);
    int state_bad = poison_state(bs, "a.state");
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(SECONDS)};
    size_t normal = wfx_produce(bs, "telemetry", &in, 0, SECONDS / 2);
    struct hostile_counts hc = {0, 0};
    hostile_input(bs, in.base_ts_ms, &hc);
    normal += wfx_produce(bs, "telemetry", &in, SECONDS / 2, SECONDS);

    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "tidegate-anomaly", "a.", NULL);
    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    /* Every record consumed (the poisoned markers would make the markers alone look done),
     * then every one committed. */
    wfx_worker_wait_assigned(w, 60000);
    struct consumed_ctx cc = {w, (double)normal + hc.total};
    if (!tg_harness_wait_until(consumed_all, &cc, 90000) ||
        !wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 90000))
        fail_msg("the worker did not process every partition to its end (see %s)",
                 tg_harness_proc_stderr_path(w->proc));
    char *body = wfx_scrape(w);
    double consumed = wfx_metric(body, "tidegate_worker_records_consumed_total");
    double invalid = sum_family(body, "tidegate_worker_records_invalid_total");
    double restore_errors = wfx_metric(body, "tidegate_worker_state_restore_errors_total");
    fprintf(stderr,
            "records %zu normal + %d hostile (%d invalid): consumed %.0f, invalid %.0f; "
            "state restore errors %.0f (at least %d)\n",
            normal, hc.total, hc.invalid, consumed, invalid, restore_errors, state_bad);
    assert_true(consumed == (double)normal + hc.total);
    assert_true(invalid == hc.invalid);
    assert_true(restore_errors >= state_bad);
    free(body);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w)));

    /* A flood of new series against [engine] max_series: the points refused are counted
     * (a second worker, its own group and topics, the same input). */
    char extra[128];
    snprintf(extra, sizeof extra, "[engine]\nmax_series = %d\n", MAX_SERIES);
    struct wfx_worker *c = wfx_worker_start(dir, "c", "c", bs, "capped", "ref.", extra);
    if (!wfx_wait_processed(bs, "ref.state", hi, PARTITIONS, 90000))
        fail_msg("the capped worker did not process every partition to its end (see %s)",
                 tg_harness_proc_stderr_path(c->proc));
    /* The series gauge and the refused counter are set after each commit returns
     * (consumer__metrics_committed), and the markers just read are visible from the commit
     * on: the last commit's figures can lag them (CTest run, load 5: a scrape found
     * 1 series). Wait for at least MAX_SERIES and a refusal, then check it is exactly that. */
    struct series_ctx sc = {c, MAX_SERIES};
    if (!tg_harness_wait_until(series_at_least, &sc, 20000))
        fprintf(stderr, "the capped worker's figures: below %d series or none refused\n",
                MAX_SERIES);
    body = wfx_scrape(c);
    double refused = wfx_metric(body, "tidegate_worker_series_refused_total");
    double series = wfx_metric(body, "tidegate_worker_series");
    fprintf(stderr, "max_series %d: %.0f series, %.0f points of new series refused\n",
            MAX_SERIES, series, refused);
    assert_true(series == MAX_SERIES);
    assert_true(refused > 0);
    free(body);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(c)));
    wfx_worker_destroy(c);

    size_t quote_alerts, accent_aggs, slash_aggs;
    size_t alerts = assert_all_json(bs, "a.anomalies", "q\"uote", &quote_alerts);
    size_t aggs = assert_all_json(bs, "a.agg", "temp\xc3\xa9rature", &accent_aggs);
    assert_all_json(bs, "a.agg", "back\\slash", &slash_aggs);
    fprintf(stderr, "%zu alert and %zu aggregate records, all valid JSON; alerts of "
                    "'q\"uote' %zu, aggregates of 'back\\slash' %zu and 'temp\xc3\xa9rature' %zu\n",
            alerts, aggs, quote_alerts, slash_aggs, accent_aggs);
    assert_true(quote_alerts > 0);
    /* Three minutes of input close the first two windows of every device, each whole. */
    size_t windows, whole;
    fleet_windows(bs, &windows, &whole);
    fprintf(stderr, "fleet: %zu windows, %zu of them whole\n", windows, whole);
    assert_true(windows == 2 * DEVICES && whole == windows);
    assert_true(slash_aggs == 1 && accent_aggs == 1);

    wfx_worker_destroy(w);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hostile_records_are_counted_not_fatal, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
