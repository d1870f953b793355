/*
 * test_sim_run.c - `tidegate-sim run` against a real Mosquitto: 200 devices for a few
 * seconds all connect, their readings arrive on telemetry/<device id> (a libmosquitto
 * subscriber counts them), the run's ledger agrees with what arrived, injected malformed and
 * duplicate publishes arrive too, and the labels file holds one JSON line per anomaly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "ledger.h"

#define DEVICES 200
#define WAIT_MS 30000

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

struct counter {
    pthread_mutex_t lock;
    bool subscribed;
    uint64_t messages;
    uint64_t per_device[DEVICES + 1];
};

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                         const int *granted)
{
    (void)mosq;
    (void)mid;
    struct counter *c = obj;
    pthread_mutex_lock(&c->lock);
    c->subscribed = qos_count == 1 && granted[0] == 1;
    pthread_mutex_unlock(&c->lock);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    struct counter *c = obj;
    unsigned idx = 0;
    pthread_mutex_lock(&c->lock);
    c->messages++;
    if (sscanf(msg->topic, "telemetry/sim-%u", &idx) == 1 && idx >= 1 && idx <= DEVICES)
        c->per_device[idx]++;
    pthread_mutex_unlock(&c->lock);
}

static bool is_subscribed(void *ud)
{
    struct counter *c = ud;
    pthread_mutex_lock(&c->lock);
    bool s = c->subscribed;
    pthread_mutex_unlock(&c->lock);
    return s;
}

struct settle {
    struct counter *c;
    uint64_t expect;
};

static bool received_at_least(void *ud)
{
    struct settle *s = ud;
    pthread_mutex_lock(&s->c->lock);
    bool ok = s->c->messages >= s->expect;
    pthread_mutex_unlock(&s->c->lock);
    return ok;
}

static bool proc_exited(void *ud)
{
    return !tg_harness_proc_running(ud);
}

static void test_sim_run_200(void **state)
{
    (void)state;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, "max_queued_messages 100000\n");
    assert_non_null(mq);
    char *dir = tg_harness_tmpdir_new("simrun");
    assert_non_null(dir);

    struct counter cnt = {.lock = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(mosquitto_lib_init(), MOSQ_ERR_SUCCESS);
    struct mosquitto *sub = mosquitto_new("test-sim-sub", true, &cnt);
    assert_non_null(sub);
    mosquitto_subscribe_callback_set(sub, on_subscribe);
    mosquitto_message_callback_set(sub, on_message);
    assert_int_equal(mosquitto_connect(sub, tg_harness_mosquitto_host(mq),
                                       tg_harness_mosquitto_port(mq), 30),
                     MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(sub), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_subscribe(sub, NULL, "telemetry/#", 1), MOSQ_ERR_SUCCESS);
    assert_true(tg_harness_wait_until(is_subscribed, &cnt, WAIT_MS));

    char sim[512], broker[64], ledger[512], labels[512];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(mq),
             tg_harness_mosquitto_port(mq));
    snprintf(ledger, sizeof ledger, "%s/ledger.txt", dir);
    snprintf(labels, sizeof labels, "%s/labels.jsonl", dir);
    const char *argv[] = {sim, "run", "--broker", broker, "--devices", "200", "--rate", "2",
                          "--duration", "4", "--seed", "7", "--ledger", ledger,
                          "--labels", labels, "--anomaly-rate", "600", "--malformed", "0.05",
                          "--duplicates", "0.05", "--skew", "0.1", "--connect-rate", "400",
                          NULL};
    struct tg_harness_proc *proc = tg_harness_proc_start(dir, "tidegate-sim", argv, NULL, 0);
    assert_non_null(proc);
    assert_true(tg_harness_wait_until(proc_exited, proc, WAIT_MS));
    int status = 0;
    assert_int_equal(tg_harness_proc_wait(proc, 1000, &status), 0);
    assert_true(tg_harness_exited_ok(status));
    assert_true(tg_harness_file_contains(tg_harness_proc_stderr_path(proc),
                                         "all 200 devices connected"));

    char err[256];
    struct tg_ledger *lg = tg_ledger_read(ledger, err, sizeof err);
    if (!lg)
        fail_msg("ledger: %s", err);
    struct tg_ledger_totals tot;
    tg_ledger_totals(lg, &tot);
    assert_int_equal(tot.devices, DEVICES);
    /* 200 devices x 2 Hz x 4 s, give or take the ramp (0.5 s) and timing. */
    assert_true(tot.released >= 1200 && tot.released <= 1800);
    assert_int_equal(tot.unconfirmed, 0);
    assert_int_equal(tot.dropped, 0);
    assert_true(tot.malformed > 20 && tot.malformed < 150);
    assert_true(tot.duplicates > 20 && tot.duplicates < 150);
    assert_true(tot.skewed > 0);

    /* Every confirmed publish reaches the subscriber (QoS1 end to end). */
    struct settle st = {.c = &cnt, .expect = tot.released + tot.malformed + tot.duplicates};
    assert_true(tg_harness_wait_until(received_at_least, &st, WAIT_MS));
    pthread_mutex_lock(&cnt.lock);
    /* Every device published; some fewer than others (silence anomalies: the first sample
     * always comes before a device's first anomaly). */
    int busy = 0;
    for (int d = 1; d <= DEVICES; d++) {
        assert_true(cnt.per_device[d] >= 1);
        busy += cnt.per_device[d] >= 5;
    }
    assert_true(busy >= DEVICES / 2);
    pthread_mutex_unlock(&cnt.lock);

    /* Labels: JSON lines with the five keys. */
    char *text = tg_harness_read_file(labels);
    assert_non_null(text);
    int lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        assert_non_null(strstr(line, "\"device\":\"sim-"));
        assert_non_null(strstr(line, "\"metric\":"));
        assert_non_null(strstr(line, "\"kind\":"));
        assert_non_null(strstr(line, "\"start_ts\":"));
        assert_non_null(strstr(line, "\"end_ts\":"));
        lines++;
    }
    assert_true(lines > 20); /* 600/h x 200 devices x 4 s: ~130 started */
    free(text);

    tg_ledger_destroy(lg);
    mosquitto_disconnect(sub);
    mosquitto_loop_stop(sub, false);
    mosquitto_destroy(sub);
    mosquitto_lib_cleanup();
    tg_harness_proc_destroy(proc);
    tg_harness_tmpdir_done(dir);
    tg_harness_mosquitto_destroy(mq);
}

/* Setup errors exit non-zero before doing anything. */
static void test_sim_run_usage(void **state)
{
    (void)state;
    char sim[512];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    const char *no_broker[] = {sim, "run", "--devices", "3", NULL};
    int status = tg_harness_run(no_broker, NULL, 0, NULL, 10000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    const char *bad_rate[] = {sim, "run", "--broker", "127.0.0.1:1", "--rate", "fast", NULL};
    status = tg_harness_run(bad_rate, NULL, 0, NULL, 10000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    const char *bad_metrics[] = {sim, "run", "--broker", "127.0.0.1:1", "--devices", "1",
                                 "--metrics-listen", "not-an-address", NULL};
    status = tg_harness_run(bad_metrics, NULL, 0, NULL, 10000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sim_run_200, teardown),
        cmocka_unit_test_teardown(test_sim_run_usage, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
