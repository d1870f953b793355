/*
 * test_sim_epochs.c - runs of the simulator that must not be mistaken for one another, and an
 * audit that reads the topic to its end (issue 10, part 2).
 *
 * runs_against_one_gateway: three `tidegate-sim run`s of the same fleet (same seed) into one
 * gateway. The second run boots every device one higher (the boot state the first left in
 * the state directory), so the gateway takes all of it: both runs are delivered whole, and
 * the audit of either ledger passes, counting the other run's records as another run's.
 * The third run starts from a fresh state directory: its devices boot at 1 again, below the
 * gateway's boot 2 (a re-flashed node). After the gateway's epoch grace it is a new epoch,
 * delivered whole, and its audit tells it from the first run (same devices, boot and seqs)
 * by when the gateway received the records.
 *
 * late_duplicates_are_read: a topic holding a run's readings followed by copies of them in
 * the same partition; with --idle 0 the audit has everything it expects after the originals,
 * and must still read on to the high watermark and find the copies.
 *
 * from_end_skips_what_the_topic_held: the same topic, the first copy there before the audit
 * starts with --from-end: only the second is read, and the run passes.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "codec_canonical.h"
#include "gateway_fixture.h"
#include "ledger.h"

#define DEVICES 50
#define DURATION_S "3"
#define WAIT_MS 60000
#define DELIVER_WAIT_MS 30000 /* a few hundred readings after the run: seconds at most */
#define EPOCH_GRACE_MS 1000

static int teardown(void **state)
{
    (void)state;
    tg_gw_reap_all();
    return 0;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_int_t jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("audit JSON: %s is not an integer", key);
    return json_integer_value(v);
}

/* tidegate-sim run of the test fleet with its ledger at ledger_path (the boot state goes to
 * the ledger's directory). Returns the ledger's released count and the first device's boot. */
static uint64_t sim_run(struct tg_gw *gw, const char *ledger_path, uint64_t *boot)
{
    char sim[1024], broker[64], devices[16];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(tg_gw_mosquitto(gw)),
             tg_harness_mosquitto_port(tg_gw_mosquitto(gw)));
    snprintf(devices, sizeof devices, "%d", DEVICES);
    const char *argv[] = {sim, "run", "--broker", broker, "--devices", devices, "--duration",
                          DURATION_S, "--seed", "7", "--ledger", ledger_path, "--drain", "20",
                          NULL};
    int status = tg_harness_run(argv, NULL, 0, NULL, WAIT_MS);
    assert_true(tg_harness_exited_ok(status));
    char err[512];
    struct tg_ledger *lg = tg_ledger_read(ledger_path, err, sizeof err);
    if (!lg)
        fail_msg("%s", err);
    struct tg_ledger_totals t;
    tg_ledger_totals(lg, &t);
    assert_int_equal(t.devices, DEVICES);
    assert_int_equal(t.connected_devices, DEVICES);
    *boot = tg_ledger_device_boot(lg, 0);
    tg_ledger_destroy(lg);
    assert_true(t.released >= DEVICES);
    return t.released;
}

/* tidegate-sim audit --json of one ledger; returns the parsed report and the exit status. */
static json_t *audit(struct tg_gw *gw, const char *ledger_path, const char *idle, int *status)
{
    char sim[1024];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    const char *argv[] = {sim,     "audit", "--brokers", tg_gw_bootstrap(gw), "--topic",
                          TG_GW_TOPIC, "--dlq-topic", TG_GW_DLQ_TOPIC, "--ledger", ledger_path,
                          "--json", "--timeout", "30", "--idle", idle, NULL};
    char *out = NULL;
    *status = tg_harness_run(argv, NULL, 0, &out, WAIT_MS);
    assert_non_null(out);
    fprintf(stderr, "audit of %s (exit %d): %s", ledger_path,
            WIFEXITED(*status) ? WEXITSTATUS(*status) : -1, out);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    if (!root)
        fail_msg("audit output is not JSON: %s", jerr.text);
    free(out);
    return root;
}

static void expect_pass(json_t *root, int status, uint64_t released, uint64_t other_runs_min)
{
    assert_true(json_is_true(json_object_get(root, "ok")));
    assert_true(tg_harness_exited_ok(status));
    assert_int_equal(jint(root, "delivered"), (json_int_t)released);
    assert_int_equal(jint(root, "lost"), 0);
    assert_int_equal(jint(root, "duplicated"), 0);
    assert_int_equal(jint(root, "unexpected"), 0);
    assert_true(jint(root, "other_runs") >= (json_int_t)other_runs_min);
}

struct after {
    int64_t at_ms;
};

static bool wall_clock_passed(void *ud)
{
    return wall_ms() >= ((struct after *)ud)->at_ms;
}

static void runs_against_one_gateway(void **state)
{
    (void)state;
    static const char *const sets[] = {"journal.dedup_epoch_grace_ms=1000", NULL};
    const struct tg_gw_opts opts = {.sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    const char *dir = tg_gw_dir(gw);
    char ledger1[1024], ledger2[1024], fresh[1024], ledger3[1100];
    snprintf(ledger1, sizeof ledger1, "%s/ledger1", dir);
    snprintf(ledger2, sizeof ledger2, "%s/ledger2", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh", dir);
    snprintf(ledger3, sizeof ledger3, "%s/ledger3", fresh);
    assert_int_equal(mkdir(fresh, 0755), 0);

    uint64_t boot1, boot2, boot3;
    uint64_t released1 = sim_run(gw, ledger1, &boot1);
    uint64_t released2 = sim_run(gw, ledger2, &boot2);
    int64_t run2_end_ms = wall_ms();
    /* Both runs reach Kafka: the second is not dropped as duplicates of the first. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  (double)(released1 + released2), DELIVER_WAIT_MS));
    assert_int_equal(boot1, 1);
    assert_int_equal(boot2, 2);

    int status;
    json_t *r = audit(gw, ledger2, "1", &status);
    expect_pass(r, status, released2, released1);
    json_decref(r);
    r = audit(gw, ledger1, "1", &status); /* the older ledger, after the newer run */
    expect_pass(r, status, released1, released2);
    json_decref(r);

    /* The third run has lost its boot state: boot 1 again, below the gateway's boot 2. Its
     * readings must be newer than boot 2's by more than the grace (whole seconds). */
    struct after gap = {run2_end_ms + 2 * EPOCH_GRACE_MS + 1500};
    assert_true(tg_harness_wait_until(wall_clock_passed, &gap, 10000));
    double epochs0 = tg_gw_metric(gw, "tidegate_dedup_new_epochs_total", NULL);
    double delivered0 = tg_gw_metric(gw, "tidegate_messages_delivered_total", NULL);
    uint64_t released3 = sim_run(gw, ledger3, &boot3);
    assert_int_equal(boot3, 1);
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  delivered0 + (double)released3, DELIVER_WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_dedup_new_epochs_total", NULL, TG_GW_EQ,
                                epochs0 + DEVICES));
    assert_true(tg_gw_metric_is(gw, "tidegate_dedup_out_of_window_total", NULL, TG_GW_EQ, 0));
    /* Run 1 has the same devices, boot and seqs: told apart by the gateway's receive time. */
    r = audit(gw, ledger3, "1", &status);
    expect_pass(r, status, released3, released1 + released2);
    json_decref(r);

    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

/* Produces the canonical JSON record of (sim-00001, 1, seq) to partition 0. */
static void produce(rd_kafka_t *rk, uint64_t seq)
{
    struct tg_metric m = {.name = "temperature_c", .value = 21.5};
    int64_t now = wall_ms();
    struct tg_reading rd = {.device = "sim-00001", .has_seq = true, .boot = 1, .seq = seq,
                            .ts_ms = now - 50, .n_metrics = 1, .metrics = &m};
    char buf[512];
    size_t len;
    assert_int_equal(tg_codec_canonical_json(&rd, "gw-test", now, buf, sizeof buf, &len), TG_OK);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(TG_GW_TOPIC), RD_KAFKA_V_PARTITION(0),
        RD_KAFKA_V_KEY("sim-00001", 9), RD_KAFKA_V_VALUE(buf, len),
        RD_KAFKA_V_HEADER("content-type", "application/json", -1),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Produces sim-00001's readings 0 .. n-1 (boot 1) to partition 0, in order, and waits until
 * the cluster has them. */
static void produce_run(struct tg_harness_devkafka *dk, uint64_t n)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       tg_harness_devkafka_bootstrap(dk), errstr, sizeof errstr),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr,
                                       sizeof errstr),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    for (uint64_t seq = 0; seq < n; seq++)
        produce(rk, seq);
    assert_int_equal(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
}

/* The ledger of that run: sim-00001 connected, boot 1, readings 0 .. n-1 released. */
static void write_run_ledger(const char *path, uint64_t n)
{
    struct tg_ledger *lg = tg_ledger_new();
    assert_int_equal(tg_ledger_add_device(lg, "sim-00001"), 0);
    assert_int_equal(tg_ledger_connected(lg, 0), 0);
    assert_int_equal(tg_ledger_set_boot(lg, 0, 1), 0);
    for (uint64_t seq = 0; seq < n; seq++) {
        assert_int_equal(tg_ledger_reading(lg, 0, TG_NODE_EV_TAKEN, 1, seq), 0);
        assert_int_equal(tg_ledger_reading(lg, 0, TG_NODE_EV_RELEASED, 1, seq), 0);
    }
    assert_int_equal(tg_ledger_write(lg, path), 0);
    tg_ledger_destroy(lg);
}

/* The JSON report of an audit that exited with status (its stdout), printed. */
static json_t *audit_report(const char *out, int status)
{
    assert_non_null(out);
    fprintf(stderr, "audit (exit %d): %s", WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
    json_t *root = json_loads(out, 0, NULL);
    assert_non_null(root);
    return root;
}

static void late_duplicates_are_read(void **state)
{
    (void)state;
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    /* The run's ten readings, then a copy of each, all in one partition, in that order. */
    produce_run(dk, 10);
    produce_run(dk, 10);
    char ledger_path[1024];
    snprintf(ledger_path, sizeof ledger_path, "%s/ledger", tg_harness_devkafka_dir(dk));
    write_run_ledger(ledger_path, 10);

    char sim[1024];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    const char *argv[] = {sim, "audit", "--brokers", tg_harness_devkafka_bootstrap(dk),
                          "--topic", TG_GW_TOPIC, "--ledger", ledger_path, "--json",
                          "--timeout", "30", "--idle", "0", NULL};
    char *out = NULL;
    int status = tg_harness_run(argv, NULL, 0, &out, WAIT_MS);
    json_t *root = audit_report(out, status);
    assert_int_equal(jint(root, "delivered"), 10);
    assert_int_equal(jint(root, "duplicated"), 10);
    assert_int_equal(jint(root, "records"), 20);
    assert_true(json_is_false(json_object_get(root, "ok")));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    json_decref(root);
    free(out);
    tg_harness_devkafka_destroy(dk);
}

static bool audit_consuming(void *ud)
{
    return tg_harness_file_contains(tg_harness_proc_stderr_path(ud), "consuming");
}

/* --from-end (README, "tidegate-sim audit"): a topic that holds an earlier run of the same
 * fleet (same device, boot and seqs, which no receive time tells apart here: the ledger has
 * no run window). An audit started with --follow --from-end before this run reads only this
 * run's records and passes; the same audit from the beginning counts the earlier run's
 * records as duplicates and fails. */
static void from_end_skips_what_the_topic_held(void **state)
{
    (void)state;
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    produce_run(dk, 10); /* the earlier run */
    char ledger_path[1024];
    snprintf(ledger_path, sizeof ledger_path, "%s/ledger", tg_harness_devkafka_dir(dk));

    char sim[1024];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    const char *argv[] = {sim, "audit", "--brokers", tg_harness_devkafka_bootstrap(dk),
                          "--topic", TG_GW_TOPIC, "--ledger", ledger_path, "--json",
                          "--timeout", "30", "--idle", "0", "--follow", "--from-end", NULL};
    struct tg_harness_proc *audit =
        tg_harness_proc_start(tg_harness_devkafka_dir(dk), "audit-from-end", argv, NULL, 0);
    assert_non_null(audit);
    /* Consuming: it has taken the end offsets, so what follows is this run's. */
    assert_true(tg_harness_wait_until(audit_consuming, audit, WAIT_MS));
    produce_run(dk, 10); /* this run */
    write_run_ledger(ledger_path, 10);
    int status;
    assert_int_equal(tg_harness_proc_wait(audit, WAIT_MS, &status), 0);
    char *out = tg_harness_read_file(tg_harness_proc_stdout_path(audit));
    json_t *root = audit_report(out, status);
    assert_int_equal(jint(root, "records"), 10);
    assert_int_equal(jint(root, "delivered"), 10);
    assert_int_equal(jint(root, "duplicated"), 0);
    assert_true(json_is_true(json_object_get(root, "ok")));
    assert_true(tg_harness_exited_ok(status));
    json_decref(root);
    free(out);
    tg_harness_proc_destroy(audit);

    /* Without --from-end (and --follow: the ledger is there now), the earlier run counts. */
    argv[13] = NULL;
    out = NULL;
    status = tg_harness_run(argv, NULL, 0, &out, WAIT_MS);
    root = audit_report(out, status);
    assert_int_equal(jint(root, "records"), 20);
    assert_int_equal(jint(root, "duplicated"), 10);
    assert_true(json_is_false(json_object_get(root, "ok")));
    json_decref(root);
    free(out);
    tg_harness_devkafka_destroy(dk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(late_duplicates_are_read, teardown),
        cmocka_unit_test_teardown(from_end_skips_what_the_topic_held, teardown),
        cmocka_unit_test_teardown(runs_against_one_gateway, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
