/*
 * test_sim_score.c - `tidegate-sim score` as its users run it: alert records produced into
 * Kafka the way the worker writes them (JSON, key = device, some in a Kafka transaction), a
 * labels file like `tidegate-sim run --labels` writes, and the binary's report and exit
 * status: detected, missed and false counted as the matching rules say, floors failing with
 * exit 1, nothing read failing with exit 1, an unreachable cluster with exit 2.
 *
 * Two tiers (TG_KAFKA_TIER, as in gateway_fixture.h): devkafka by default; "real", the Apache
 * Kafka broker of harness_kafka.h, where transactions are real, so it also checks that an
 * aborted alert is never counted and that an alert in a transaction still open is not counted
 * until it commits. The mock cluster of librdkafka 2.0.2 keeps no aborted ranges and no last
 * stable offset, so those checks cannot run on devkafka.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "harness_kafka.h"

#define T0 1763712000000LL
#define S(x) ((int64_t)(x) * 1000)
#define RUN_TIMEOUT_MS 60000
#define DELIVERY_TIMEOUT_MS 30000

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

/* The cluster of this run: devkafka, or the real broker with TG_KAFKA_TIER=real. */
struct cluster {
    bool real;
    struct tg_harness_devkafka *dk;
    struct tg_harness_kafka *kf;
};

static void cluster_start(struct cluster *cl)
{
    const char *tier = getenv("TG_KAFKA_TIER");
    cl->real = tier && strcmp(tier, "real") == 0;
    if (tier && !cl->real && strcmp(tier, "dev") != 0)
        fail_msg("TG_KAFKA_TIER='%s': expected dev or real", tier);
    if (cl->real) {
        cl->kf = tg_harness_kafka_start(0, 0);
        assert_non_null(cl->kf);
    } else {
        cl->dk = tg_harness_devkafka_start(NULL);
        assert_non_null(cl->dk);
    }
}

static const char *cluster_bootstrap(const struct cluster *cl)
{
    return cl->real ? tg_harness_kafka_bootstrap(cl->kf) : tg_harness_devkafka_bootstrap(cl->dk);
}

static void cluster_destroy(struct cluster *cl)
{
    tg_harness_kafka_destroy(cl->kf);
    tg_harness_devkafka_destroy(cl->dk);
}

static rd_kafka_t *producer_new(const char *bootstrap, const char *transactional_id)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers", bootstrap, "acks", "all", "linger.ms", "5",
                        "enable.idempotence", "true", NULL};
    for (size_t i = 0; kv[i]; i += 2)
        assert_int_equal(rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr),
                         RD_KAFKA_CONF_OK);
    if (transactional_id)
        assert_int_equal(rd_kafka_conf_set(conf, "transactional.id", transactional_id, errstr,
                                           sizeof errstr),
                         RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk)
        fail_msg("rd_kafka_new: %s", errstr);
    return rk;
}

/* One alert record as the worker writes it (worker/engine.h, issue 9). */
static void produce_alert(rd_kafka_t *rk, const char *device, const char *metric,
                          const char *kind, const char *state, int64_t start, int64_t end)
{
    char id[160], value[1024];
    snprintf(id, sizeof id, "%s/%s/%s/%lld", device, metric, kind, (long long)(T0 + start));
    snprintf(value, sizeof value,
             "{\"id\":\"%s\",\"device\":\"%s\",\"metric\":\"%s\",\"kind\":\"%s\","
             "\"detectors\":[{\"name\":\"%s\",\"score\":0.97}],\"value\":12.5,"
             "\"baseline\":10.0,\"start_ts\":%lld,\"end_ts\":%lld,\"state\":\"%s\"}",
             id, device, metric, kind, kind, (long long)(T0 + start), (long long)(T0 + end),
             state);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC("telemetry.anomalies"), RD_KAFKA_V_KEY(device, strlen(device)),
        RD_KAFKA_V_VALUE(value, strlen(value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_TIMESTAMP(T0 + end), RD_KAFKA_V_END);
    if (err)
        fail_msg("produce: %s", rd_kafka_err2str(err));
}

static void flush(rd_kafka_t *rk)
{
    assert_int_equal(rd_kafka_flush(rk, DELIVERY_TIMEOUT_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_outq_len(rk), 0);
}

static void txn_ok(rd_kafka_error_t *error, const char *what)
{
    if (error) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: %s", what, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        fail_msg("%s", msg);
    }
}

static char *write_labels(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/run.labels", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    struct {
        const char *device, *metric, *kind;
        int64_t start, end;
    } labels[] = {
        {"sim-00001", "temperature_c", "spike", S(100), S(100)},
        {"sim-00002", "humidity_pct", "level_shift", S(100), S(300)},
        {"sim-00003", "*", "silence", S(50), S(100)},
        {"sim-00004", "battery_v", "stuck", S(0), S(60)}, /* no alert: missed */
    };
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++)
        fprintf(f,
                "{\"device\":\"%s\",\"metric\":\"%s\",\"kind\":\"%s\",\"start_ts\":%lld,"
                "\"end_ts\":%lld}\n",
                labels[i].device, labels[i].metric, labels[i].kind,
                (long long)(T0 + labels[i].start), (long long)(T0 + labels[i].end));
    assert_int_equal(fclose(f), 0);
    return strdup(path);
}

/* Runs tidegate-sim score with args; returns its exit status, *out its stdout. */
static int run_score(const char *const args[], char **out)
{
    char sim[1024];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    const char *argv[32] = {sim, "score"};
    size_t n = 2;
    for (size_t i = 0; args[i]; i++) {
        assert_true(n < 31);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    int status = tg_harness_run(argv, NULL, 0, out, RUN_TIMEOUT_MS);
    assert_true(status != -1);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static json_t *kind_of(json_t *doc, const char *kind)
{
    json_t *k = json_object_get(json_object_get(doc, "kinds"), kind);
    assert_non_null(k);
    return k;
}

static long long jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", key);
    return json_integer_value(v);
}

static void scores_alerts_from_kafka(void **state)
{
    (void)state;
    struct cluster cl = {0};
    cluster_start(&cl);
    const char *bootstrap = cluster_bootstrap(&cl);
    char *dir = tg_harness_tmpdir_new("score");
    assert_non_null(dir);
    char *labels = write_labels(dir);

    /* Outside transactions: a detected spike (open, close), the silent device's silence
     * alerts on two metrics (one label detected), a false alert on a clean device. */
    rd_kafka_t *plain = producer_new(bootstrap, NULL);
    produce_alert(plain, "sim-00001", "temperature_c", "level", "open", S(100), S(100));
    produce_alert(plain, "sim-00001", "temperature_c", "level", "close", S(100), S(130));
    produce_alert(plain, "sim-00003", "temperature_c", "silence", "open", S(49), S(55));
    produce_alert(plain, "sim-00003", "humidity_pct", "silence", "open", S(49), S(55));
    produce_alert(plain, "sim-00005", "pressure_hpa", "level", "open", S(400), S(400));
    flush(plain);
    rd_kafka_destroy(plain);

    /* In a transaction, as the worker writes: the level shift's incident (open, update,
     * close). On the real broker the partition then ends with a control record, which
     * read_committed skips, so reaching the end is seen by EOF, not by a last record. */
    rd_kafka_t *tx = producer_new(bootstrap, "test-sim-score");
    txn_ok(rd_kafka_init_transactions(tx, DELIVERY_TIMEOUT_MS), "init_transactions");
    txn_ok(rd_kafka_begin_transaction(tx), "begin_transaction");
    produce_alert(tx, "sim-00002", "humidity_pct", "shift", "open", S(105), S(105));
    produce_alert(tx, "sim-00002", "humidity_pct", "shift", "update", S(105), S(200));
    produce_alert(tx, "sim-00002", "humidity_pct", "shift", "close", S(105), S(330));
    txn_ok(rd_kafka_commit_transaction(tx, DELIVERY_TIMEOUT_MS), "commit_transaction");
    if (cl.real) {
        /* A false alert in an aborted transaction: never counted. (Not on devkafka: librdkafka
         * 2.0.2's mock cluster keeps no aborted ranges and hands such records out.) */
        txn_ok(rd_kafka_begin_transaction(tx), "begin_transaction");
        produce_alert(tx, "sim-00006", "vibration_g", "level", "open", S(500), S(500));
        flush(tx);
        txn_ok(rd_kafka_abort_transaction(tx, DELIVERY_TIMEOUT_MS), "abort_transaction");
    }

    /* No floors: the report is produced, exit 0. */
    char *out = NULL;
    const char *args[] = {"--labels", labels, "--brokers", bootstrap, "--json",
                          "--devices", "10", "--duration-s", "600", NULL};
    assert_int_equal(run_score(args, &out), 0);
    json_error_t jerr;
    json_t *doc = json_loads(out, 0, &jerr);
    if (!doc)
        fail_msg("not JSON (%s): %s", jerr.text, out);
    free(out);
    assert_int_equal(jint(doc, "partitions"), 6);
    assert_int_equal(jint(doc, "records"), 8);
    assert_int_equal(jint(doc, "undecodable"), 0);
    assert_int_equal(jint(doc, "incidents"), 5);
    assert_int_equal(jint(doc, "extra_incidents"), 1); /* the second silence alert */
    json_t *all = json_object_get(doc, "all");
    assert_int_equal(jint(all, "labels"), 4);
    assert_int_equal(jint(all, "detected"), 3);
    assert_int_equal(jint(all, "false_alerts"), 1);
    assert_int_equal(jint(kind_of(doc, "spike"), "detected"), 1);
    assert_int_equal(jint(kind_of(doc, "level_shift"), "delay_p50_ms"), S(5));
    assert_int_equal(jint(kind_of(doc, "silence"), "delay_p50_ms"), -S(1));
    assert_int_equal(jint(kind_of(doc, "stuck"), "detected"), 0);
    assert_true(json_is_true(json_object_get(doc, "pass")));
    json_decref(doc);

    /* A recall floor that stuck (0 of 1) cannot meet: exit 1, and the text says why. */
    const char *floor_args[] = {"--labels", labels, "--brokers", bootstrap,
                                "--min-recall", "0.5", NULL};
    assert_int_equal(run_score(floor_args, &out), 1);
    assert_non_null(strstr(out, "verdict: FAIL"));
    assert_non_null(strstr(out, "recall of stuck 0.000 < 0.5"));
    free(out);

    /* A topic nobody wrote to: labels but no alert read is a failure, not a perfect score. */
    const char *empty_args[] = {"--labels", labels, "--brokers", bootstrap,
                                "--topic", "telemetry.agg.1m", NULL};
    assert_int_equal(run_score(empty_args, &out), 1);
    assert_non_null(strstr(out, "no alert record read"));
    free(out);

    /* --since-ms after every alert: the same failure, the records reported as left out. */
    char since[32];
    snprintf(since, sizeof since, "%lld", (long long)(T0 + S(3600)));
    const char *since_args[] = {"--labels", labels, "--brokers", bootstrap,
                                "--since-ms", since, NULL};
    assert_int_equal(run_score(since_args, &out), 1);
    assert_non_null(strstr(out, "no alert record read"));
    free(out);

    /* Usage errors: exit 2 and no report. */
    const char *bad_args[] = {"--labels", labels, "--brokers", bootstrap,
                              "--max-false-per-device-hour", "0.05", NULL};
    assert_int_equal(run_score(bad_args, &out), 2);
    assert_string_equal(out, "");
    free(out);

    if (cl.real) {
        /* Last, since it adds a detection the checks above do not expect. An open
         * transaction: score reads to the last stable offset it finds at start, so
         * the alert in it is not counted (it may yet be aborted), and score does not wait
         * for it. Once it commits, the alert counts. */
        txn_ok(rd_kafka_begin_transaction(tx), "begin_transaction");
        produce_alert(tx, "sim-00004", "battery_v", "stuck", "open", S(20), S(20));
        flush(tx);
        assert_int_equal(run_score(args, &out), 0);
        doc = json_loads(out, 0, &jerr);
        if (!doc)
            fail_msg("not JSON (%s): %s", jerr.text, out);
        free(out);
        assert_int_equal(jint(doc, "records"), 8);
        assert_int_equal(jint(json_object_get(doc, "all"), "detected"), 3);
        json_decref(doc);
        txn_ok(rd_kafka_commit_transaction(tx, DELIVERY_TIMEOUT_MS), "commit_transaction");
        assert_int_equal(run_score(args, &out), 0);
        doc = json_loads(out, 0, &jerr);
        if (!doc)
            fail_msg("not JSON (%s): %s", jerr.text, out);
        free(out);
        assert_int_equal(jint(doc, "records"), 9);
        assert_int_equal(jint(json_object_get(doc, "all"), "detected"), 4);
        assert_int_equal(jint(json_object_get(doc, "all"), "false_alerts"), 1);
        json_decref(doc);
    }
    rd_kafka_destroy(tx);
    cluster_destroy(&cl);
    free(labels);
    tg_harness_tmpdir_done(dir);
}

static void an_unreachable_cluster_is_a_setup_error(void **state)
{
    (void)state;
    char *dir = tg_harness_tmpdir_new("score");
    assert_non_null(dir);
    char *labels = write_labels(dir);
    char brokers[64];
    int port = tg_harness_free_port();
    assert_true(port > 0);
    snprintf(brokers, sizeof brokers, "127.0.0.1:%d", port);
    char *out = NULL;
    const char *args[] = {"--labels", labels, "--brokers", brokers, NULL};
    assert_int_equal(run_score(args, &out), 2);
    assert_string_equal(out, "");
    free(out);
    free(labels);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(scores_alerts_from_kafka, teardown),
        cmocka_unit_test_teardown(an_unreachable_cluster_is_a_setup_error, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
