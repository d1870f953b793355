/*
 * test_sim_run.c - `tidegate-sim run` against a real Mosquitto: 200 devices for a few
 * seconds all connect, their readings arrive on telemetry/<device id> (a libmosquitto
 * subscriber counts them), the run's ledger agrees with what arrived, injected malformed and
 * duplicate publishes arrive too, and the labels file holds one JSON line per anomaly.
 * --metrics-listen serves the tidegate_sim_* series while the run goes on (checked by
 * `promtool check metrics`), and a --storm mid-run loses no confirmed reading: every device
 * reconnects and every reading the ledger says RELEASED reaches a subscriber.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "codec.h"
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

/* --- helpers shared by the metrics and storm tests --------------------------------------- */

static void sim_path(char *buf, size_t size)
{
    snprintf(buf, size, "%s/tidegate-sim", tg_harness_bin_dir());
}

/* The value of one series in a Prometheus text scrape: the line that starts with series
 * (name, or name{labels} exactly as the exporter writes them) followed by a space. */
static bool metric_value(const char *body, const char *series, double *out)
{
    size_t n = strlen(series);
    for (const char *line = body; line && *line;) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            char *end;
            *out = strtod(line + n + 1, &end);
            return end != line + n + 1;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

static double must_metric(const char *body, const char *series)
{
    double v = 0;
    if (!metric_value(body, series, &v))
        fail_msg("series %s not in the scrape:\n%s", series, body);
    return v;
}

/* --- metrics: --metrics-listen while the fleet runs ------------------------------------- */

#define METRICS_DEVICES 100

struct scrape {
    int port;
    char *body;          /* the last scrape that met the condition (malloc'd) */
    double min_released; /* wait for released above this */
};

/* One scrape; true once every device is connected and readings are confirmed beyond
 * min_released. The process may not be listening yet: a failed GET just means "not yet". */
static bool scrape_ready(void *ud)
{
    struct scrape *sc = ud;
    char *body = NULL;
    if (tg_harness_http_get(sc->port, "/metrics", 1000, &body) != 200) {
        free(body);
        return false;
    }
    double connected = 0, released = 0, published = 0;
    bool ok = metric_value(body, "tidegate_sim_devices_connected", &connected) &&
              metric_value(body, "tidegate_sim_readings_released_total", &released) &&
              metric_value(body, "tidegate_sim_publishes_total{kind=\"reading\"}", &published) &&
              connected == METRICS_DEVICES && released > sc->min_released && published > 0;
    if (!ok) {
        free(body);
        return false;
    }
    free(sc->body);
    sc->body = body;
    return true;
}

/* The sim either announced its metrics endpoint or exited (e.g. the port was taken). */
static bool listening_or_exited(void *ud)
{
    struct tg_harness_proc *proc = ud;
    return tg_harness_file_contains(tg_harness_proc_stderr_path(proc), "metrics on http://") ||
           !tg_harness_proc_running(proc);
}

/* `promtool check metrics` on text: its exit status (-1: it did not run), or -2 when
 * promtool is not on PATH and $TG_PROMTOOL is unset. A $TG_PROMTOOL that does not run is a
 * failure, not a skip. Its complaints go to the test's stderr. */
static int promtool_check(const char *text)
{
    const char *env = getenv("TG_PROMTOOL");
    char *promtool = env && *env ? strdup(env) : tg_harness_find_program("promtool");
    if (!promtool)
        return env && *env ? -1 : -2;
    const char *argv[] = {promtool, "check", "metrics", NULL};
    char *out = NULL;
    int status = tg_harness_run(argv, text, strlen(text), &out, 30000);
    if (out && *out)
        fprintf(stderr, "promtool: %s\n", out);
    free(out);
    free(promtool);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_sim_run_metrics(void **state)
{
    (void)state;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    char *dir = tg_harness_tmpdir_new("simmetrics");
    assert_non_null(dir);

    char sim[512], broker[64], listen[64], devices[16], name[32];
    sim_path(sim, sizeof sim);
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(mq),
             tg_harness_mosquitto_port(mq));
    snprintf(devices, sizeof devices, "%d", METRICS_DEVICES);

    /* The free port can be taken between the probe and the sim's bind: the sim then exits 1
     * before announcing its endpoint, and we try another port. */
    struct tg_harness_proc *proc = NULL;
    int port = -1;
    for (int attempt = 0; attempt < 3 && !proc; attempt++) {
        port = tg_harness_free_port();
        assert_true(port > 0);
        snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
        snprintf(name, sizeof name, "tidegate-sim-%d", attempt);
        /* No ledger: the boot state goes to the test's directory, not the user's. */
        const char *argv[] = {sim, "run", "--broker", broker, "--devices", devices, "--rate", "2",
                              "--duration", "4", "--seed", "11", "--connect-rate", "400",
                              "--metrics-listen", listen, "--state-dir", dir, NULL};
        proc = tg_harness_proc_start(dir, name, argv, NULL, 0);
        assert_non_null(proc);
        assert_true(tg_harness_wait_until(listening_or_exited, proc, WAIT_MS));
        if (!tg_harness_file_contains(tg_harness_proc_stderr_path(proc), "metrics on http://")) {
            int status = 0;
            assert_int_equal(tg_harness_proc_wait(proc, 1000, &status), 0);
            assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
            tg_harness_proc_destroy(proc);
            proc = NULL;
        }
    }
    assert_non_null(proc);

    /* While the run goes on: every device connected, readings published and confirmed. */
    struct scrape sc = {.port = port, .min_released = 0};
    assert_true(tg_harness_wait_until(scrape_ready, &sc, WAIT_MS));
    assert_true(tg_harness_proc_running(proc));
    const char *b = sc.body;
    assert_int_equal(must_metric(b, "tidegate_sim_devices"), METRICS_DEVICES);
    assert_int_equal(must_metric(b, "tidegate_sim_devices_started"), METRICS_DEVICES);
    assert_int_equal(must_metric(b, "tidegate_sim_devices_connected"), METRICS_DEVICES);
    assert_true(must_metric(b, "tidegate_sim_connects_total") >= METRICS_DEVICES);
    assert_int_equal(must_metric(b, "tidegate_sim_connect_failures_total"), 0);
    assert_int_equal(must_metric(b, "tidegate_sim_disconnects_total"), 0);
    double taken = must_metric(b, "tidegate_sim_readings_taken_total");
    double released = must_metric(b, "tidegate_sim_readings_released_total");
    double published = must_metric(b, "tidegate_sim_publishes_total{kind=\"reading\"}");
    assert_true(released > 0);
    assert_true(taken >= released && published >= released);
    /* 2 Hz for at most the 4 s run, with the re-sends of a connection or two at most. */
    assert_true(taken <= METRICS_DEVICES * 2 * 5);
    /* Sampled once a second, so only bounded by the outboxes' size (30 s of readings). */
    double outbox = must_metric(b, "tidegate_sim_outbox_readings");
    assert_true(outbox >= 0 && outbox <= METRICS_DEVICES * 60);
    assert_int_equal(must_metric(b, "tidegate_sim_readings_dropped_total"), 0);
    assert_int_equal(must_metric(b, "tidegate_sim_publish_errors_total"), 0);
    assert_int_equal(must_metric(b, "tidegate_sim_publishes_total{kind=\"malformed\"}"), 0);
    assert_int_equal(must_metric(b, "tidegate_sim_faults_total{kind=\"storm\"}"), 0);
    assert_int_equal(must_metric(b, "tidegate_sim_ledger_errors_total"), 0);
    must_metric(b, "tidegate_sim_anomalies_total{kind=\"spike\"}");
    assert_non_null(strstr(b, "# TYPE tidegate_sim_devices_connected gauge\n"));
    assert_non_null(strstr(b, "# TYPE tidegate_sim_readings_released_total counter\n"));
    assert_non_null(strstr(b, "# TYPE tidegate_sim_publishes_total counter\n"));
    int promtool = promtool_check(b);

    /* The counters move on: a later scrape shows more confirmed readings (2 Hz x 100). */
    sc.min_released = released + METRICS_DEVICES;
    assert_true(tg_harness_wait_until(scrape_ready, &sc, WAIT_MS));

    assert_true(tg_harness_wait_until(proc_exited, proc, WAIT_MS));
    int status = 0;
    assert_int_equal(tg_harness_proc_wait(proc, 1000, &status), 0);
    assert_true(tg_harness_exited_ok(status));

    free(sc.body);
    tg_harness_proc_destroy(proc);
    tg_harness_tmpdir_done(dir);
    tg_harness_mosquitto_destroy(mq);
    if (promtool == -2) {
        print_message("promtool not installed (Debian's prometheus package, or TG_PROMTOOL): "
                      "the scrape's format was not checked\n");
        skip();
    }
    if (promtool != 0)
        fail_msg("promtool check metrics rejected the scrape (status %d; its output is above)",
                 promtool);
}

/* --- storm: every device drops its connection at once, mid-run -------------------------- */

#define STORM_DEVICES 200

struct key {
    uint64_t boot, seq;
};

struct seen_dev {
    struct key *keys;
    size_t n, cap;
};

/* What the subscriber received, per device: every (boot, seq) once, however often it came. */
struct seen {
    pthread_mutex_t lock;
    bool subscribed;
    struct tg_decoder *dec; /* used by the subscriber's network thread only */
    uint64_t messages;
    uint64_t repeats;       /* (device, boot, seq) received again: QoS1 re-sends */
    uint64_t undecodable;
    bool oom;
    struct seen_dev dev[STORM_DEVICES + 1]; /* by the number in sim-NNNNN */
};

static bool seen_has(const struct seen_dev *d, uint64_t boot, uint64_t seq)
{
    for (size_t i = d->n; i-- > 0;)
        if (d->keys[i].seq == seq && d->keys[i].boot == boot)
            return true;
    return false;
}

static void storm_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                               const int *granted)
{
    (void)mosq;
    (void)mid;
    struct seen *s = obj;
    pthread_mutex_lock(&s->lock);
    s->subscribed = qos_count == 1 && granted[0] == 1;
    pthread_mutex_unlock(&s->lock);
}

static void storm_on_message(struct mosquitto *mosq, void *obj,
                             const struct mosquitto_message *msg)
{
    (void)mosq;
    struct seen *s = obj;
    const char *device = strncmp(msg->topic, "telemetry/", 10) == 0 ? msg->topic + 10 : "";
    unsigned idx = 0;
    struct tg_decoded d;
    bool ok = sscanf(device, "sim-%u", &idx) == 1 && idx >= 1 && idx <= STORM_DEVICES &&
              tg_decoder_decode(s->dec, TG_FORMAT_NATIVE, device, msg->payload,
                                (size_t)msg->payloadlen, 0, &d) == TG_OK &&
              d.n_readings == 1 && d.readings[0].has_seq;
    pthread_mutex_lock(&s->lock);
    s->messages++;
    if (!ok) {
        s->undecodable++;
    } else {
        struct seen_dev *sd = &s->dev[idx];
        uint64_t boot = d.readings[0].boot, seq = d.readings[0].seq;
        if (seen_has(sd, boot, seq)) {
            s->repeats++;
        } else if (sd->n == sd->cap) {
            size_t cap = sd->cap ? sd->cap * 2 : 32;
            struct key *k = realloc(sd->keys, cap * sizeof *k);
            if (k) {
                sd->keys = k;
                sd->cap = cap;
                sd->keys[sd->n++] = (struct key){boot, seq};
            } else {
                s->oom = true;
            }
        } else {
            sd->keys[sd->n++] = (struct key){boot, seq};
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static bool storm_subscribed(void *ud)
{
    struct seen *s = ud;
    pthread_mutex_lock(&s->lock);
    bool ok = s->subscribed;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

struct released_check {
    struct seen *s;
    const struct tg_ledger *lg;
    const struct seen_dev *dev; /* the device being visited */
    const char *dev_id;
    uint64_t missing;
    char first_missing[128];
};

static bool check_released(void *ud, uint64_t boot, uint64_t seq)
{
    struct released_check *rc = ud;
    if (!seen_has(rc->dev, boot, seq)) {
        rc->missing++;
        if (!rc->first_missing[0])
            snprintf(rc->first_missing, sizeof rc->first_missing,
                     "%.64s boot %" PRIu64 " seq %" PRIu64, rc->dev_id, boot, seq);
    }
    return true;
}

/* True once every reading the ledger says RELEASED has been received. */
static bool all_released_received(void *ud)
{
    struct released_check *rc = ud;
    rc->missing = 0;
    rc->first_missing[0] = '\0';
    pthread_mutex_lock(&rc->s->lock);
    for (int i = 0; i < (int)tg_ledger_device_count(rc->lg); i++) {
        unsigned idx = 0;
        if (sscanf(tg_ledger_device_id(rc->lg, i), "sim-%u", &idx) != 1 || idx < 1 ||
            idx > STORM_DEVICES) {
            rc->missing++;
            continue;
        }
        rc->dev = &rc->s->dev[idx];
        rc->dev_id = tg_ledger_device_id(rc->lg, i);
        tg_ledger_each_released(rc->lg, i, check_released, rc);
    }
    pthread_mutex_unlock(&rc->s->lock);
    return rc->missing == 0;
}

static void test_sim_run_storm(void **state)
{
    (void)state;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, "max_queued_messages 100000\n");
    assert_non_null(mq);
    char *dir = tg_harness_tmpdir_new("simstorm");
    assert_non_null(dir);

    struct seen *s = calloc(1, sizeof *s);
    assert_non_null(s);
    assert_int_equal(pthread_mutex_init(&s->lock, NULL), 0);
    s->dec = tg_decoder_new(NULL);
    assert_non_null(s->dec);
    assert_int_equal(mosquitto_lib_init(), MOSQ_ERR_SUCCESS);
    struct mosquitto *sub = mosquitto_new("test-sim-storm-sub", true, s);
    assert_non_null(sub);
    mosquitto_subscribe_callback_set(sub, storm_on_subscribe);
    mosquitto_message_callback_set(sub, storm_on_message);
    assert_int_equal(mosquitto_connect(sub, tg_harness_mosquitto_host(mq),
                                       tg_harness_mosquitto_port(mq), 30),
                     MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(sub), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_subscribe(sub, NULL, "telemetry/#", 1), MOSQ_ERR_SUCCESS);
    assert_true(tg_harness_wait_until(storm_subscribed, s, WAIT_MS));

    char sim[512], broker[64], ledger[512], devices[16];
    sim_path(sim, sizeof sim);
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(mq),
             tg_harness_mosquitto_port(mq));
    snprintf(ledger, sizeof ledger, "%s/ledger.txt", dir);
    snprintf(devices, sizeof devices, "%d", STORM_DEVICES);
    /* Connected by 0.5 s, storm at 3 s; reconnects take up to the core's first backoff
     * (1 s, full jitter), which leaves 2 s of sampling on the new sessions. */
    const char *argv[] = {sim, "run", "--broker", broker, "--devices", devices, "--rate", "2",
                          "--duration", "6", "--seed", "5", "--storm=3", "--ledger", ledger,
                          "--connect-rate", "400", NULL};
    struct tg_harness_proc *proc = tg_harness_proc_start(dir, "tidegate-sim", argv, NULL, 0);
    assert_non_null(proc);
    assert_true(tg_harness_wait_until(proc_exited, proc, WAIT_MS));
    int status = 0;
    assert_int_equal(tg_harness_proc_wait(proc, 1000, &status), 0);
    assert_true(tg_harness_exited_ok(status));

    /* The storm hit every device (all were connected by then), and each one came back. */
    const char *err_path = tg_harness_proc_stderr_path(proc);
    assert_true(tg_harness_file_contains(err_path, "all 200 devices connected"));
    assert_true(tg_harness_file_contains(
        err_path, "storm: 200 connected devices dropped their connections at once"));
    char *log = tg_harness_read_file(err_path);
    assert_non_null(log);
    const char *faults = strstr(log, " anomalies; ");
    assert_non_null(faults);
    uint64_t attempts = 0, failed = 0, ended = 0;
    assert_int_equal(sscanf(faults, " anomalies; %" SCNu64 " connection attempts, %" SCNu64
                                    " failed, %" SCNu64 " sessions ended",
                            &attempts, &failed, &ended),
                     3);
    assert_non_null(strstr(log, " 1 storms, "));
    free(log);
    /* Two successful connections per device at least (first one, after the storm); sessions
     * ended: the storm's and the end of run's. */
    assert_true(attempts - failed >= 2 * STORM_DEVICES);
    assert_true(ended >= 2 * STORM_DEVICES);
    /* Per device, from the broker's side: a second "New client connected ... as <id>". */
    char *broker_log = tg_harness_read_file(tg_harness_mosquitto_log_path(mq));
    assert_non_null(broker_log);
    unsigned connects[STORM_DEVICES + 1] = {0};
    const char *tag = "New client connected from ";
    for (const char *p = broker_log; (p = strstr(p, tag)) != NULL; p += strlen(tag)) {
        unsigned idx = 0;
        if (sscanf(p + strlen(tag), "%*s as sim-%u", &idx) == 1 && idx >= 1 &&
            idx <= STORM_DEVICES)
            connects[idx]++;
    }
    free(broker_log);
    for (int d = 1; d <= STORM_DEVICES; d++)
        if (connects[d] < 2)
            fail_msg("sim-%05d connected %u time(s) according to the broker", d, connects[d]);

    char lerr[256];
    struct tg_ledger *lg = tg_ledger_read(ledger, lerr, sizeof lerr);
    if (!lg)
        fail_msg("ledger: %s", lerr);
    struct tg_ledger_totals tot;
    tg_ledger_totals(lg, &tot);
    assert_int_equal(tot.devices, STORM_DEVICES);
    /* 200 devices x 2 Hz x 6 s; the storm does not stop sampling (readings wait in the
     * outboxes), so only the ramp and timing make it differ. */
    assert_true(tot.released >= 1800 && tot.released <= 2600);
    assert_int_equal(tot.unconfirmed, 0);
    assert_int_equal(tot.dropped, 0);

    /* Every confirmed reading reached the subscriber at least once. */
    struct released_check rc = {.s = s, .lg = lg};
    if (!tg_harness_wait_until(all_released_received, &rc, WAIT_MS))
        fail_msg("%" PRIu64 " released readings never arrived, e.g. %s", rc.missing,
                 rc.first_missing);
    pthread_mutex_lock(&s->lock);
    assert_int_equal(s->undecodable, 0);
    assert_false(s->oom);
    print_message("storm: %" PRIu64 " released, %" PRIu64 " messages received, %" PRIu64
                  " re-sent readings received again\n",
                  tot.released, s->messages, s->repeats);
    pthread_mutex_unlock(&s->lock);

    tg_ledger_destroy(lg);
    mosquitto_disconnect(sub);
    mosquitto_loop_stop(sub, false);
    mosquitto_destroy(sub);
    mosquitto_lib_cleanup();
    tg_decoder_destroy(s->dec);
    for (int d = 0; d <= STORM_DEVICES; d++)
        free(s->dev[d].keys);
    pthread_mutex_destroy(&s->lock);
    free(s);
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
        cmocka_unit_test_teardown(test_sim_run_metrics, teardown),
        cmocka_unit_test_teardown(test_sim_run_storm, teardown),
        cmocka_unit_test_teardown(test_sim_run_usage, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
