/*
 * harness_kafka.c - the real Kafka broker tier of the test harness. The contract is in
 * harness_kafka.h; the broker's properties are in tests/kafka/kafka-broker, which this file
 * only runs. Readiness and topics go through librdkafka, the same client the gateway uses:
 * "ready" means what a client sees, not a line in the broker's log.
 */
#include "harness_kafka.h"
#include "harness_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <librdkafka/rdkafka.h>

#ifndef TG_HARNESS_KAFKA_BROKER
#define TG_HARNESS_KAFKA_BROKER "tests/kafka/kafka-broker"
#endif

#define START_TIMEOUT_MS 120000
#define STOP_TIMEOUT_MS 60000
#define KILL_WAIT_MS 10000
#define TOPIC_TIMEOUT_MS 30000
#define METADATA_TIMEOUT_MS 10000
#define PORT_ATTEMPTS 3

struct tg_harness_kafka {
    char *dir;
    char *log_path;
    char *launcher;
    char *extra_path;             /* <dir>/extra.properties, or NULL */
    int port, controller_port;
    char bootstrap[64];
    struct tg_harness_proc *proc; /* NULL while stopped */
    rd_kafka_t *rk;               /* metadata and Admin API; reconnects across restarts */
};

#define klog(...) harness__log("kafka", __VA_ARGS__)

/* ------------------------------------------------------------------------------------------
 * librdkafka client: quiet, reconnecting fast after a restart
 */

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* Connection refused while the broker starts or is down is the expected state; the
     * harness reports what matters itself. */
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void quiet_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk, (void)err, (void)reason, (void)opaque;
}

static rd_kafka_t *client_new(const char *bootstrap)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    static const char *const settings[][2] = {
        {"client.id", "tidegate-test-harness"},
        {"reconnect.backoff.ms", "50"},
        {"reconnect.backoff.max.ms", "500"},
        {"socket.connection.setup.timeout.ms", "2000"},
        {"topic.metadata.refresh.interval.ms", "1000"},
    };
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK)
        goto fail;
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
            goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rd_kafka_conf_set_error_cb(conf, quiet_error);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk)
        goto fail;
    return rk; /* rd_kafka_new() took conf */
fail:
    klog("client for %s: %s", bootstrap, errstr);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* One metadata request. Returns true when the broker answered, lists itself, and every
 * partition of every topic it has (or of `topic` alone when not NULL, which must then exist)
 * has a leader; *partitions gets that topic's partition count when asked for. */
static bool metadata_ready(struct tg_harness_kafka *kf, const char *topic, int timeout_ms,
                           int *partitions)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = topic ? rd_kafka_topic_new(kf->rk, topic, NULL) : NULL;
    bool ready = false;
    if (topic && !rkt)
        return false;
    if (rd_kafka_metadata(kf->rk, topic ? 0 : 1, rkt, &md, timeout_ms) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        goto done;
    if (md->broker_cnt < 1)
        goto done;
    ready = true;
    for (int t = 0; t < md->topic_cnt && ready; t++) {
        const struct rd_kafka_metadata_topic *mt = &md->topics[t];
        if (mt->err != RD_KAFKA_RESP_ERR_NO_ERROR || mt->partition_cnt < 1) {
            ready = false;
            break;
        }
        for (int p = 0; p < mt->partition_cnt; p++) {
            if (mt->partitions[p].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
                mt->partitions[p].leader < 0)
                ready = false;
        }
        if (partitions && topic)
            *partitions = mt->partition_cnt;
    }
    if (topic && md->topic_cnt != 1)
        ready = false;
done:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return ready;
}

/* Waits until metadata_ready() holds, giving up early when the broker process died. 0, 1
 * when the process exited, -1 on timeout. */
static int wait_ready(struct tg_harness_kafka *kf, const char *topic, int timeout_ms)
{
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    for (;;) {
        if (kf->proc && !tg_harness_proc_running(kf->proc))
            return 1;
        int64_t left = deadline - tg_harness_now_ms();
        if (left <= 0)
            return -1;
        if (metadata_ready(kf, topic, left < 2000 ? (int)left : 2000, NULL))
            return 0;
        harness__sleep_ms(50);
    }
}

/* ------------------------------------------------------------------------------------------
 * Topics (Admin API)
 */

struct topic_spec {
    const char *name;
    int partitions;
    const char *const *configs; /* "key=value", NULL-terminated, or NULL */
};

/* The error codes after which CreateTopics is worth sending again: the controller or the
 * broker is not ready yet, or the request got lost. */
static bool create_retriable(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_CONTROLLER:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
        return true;
    default:
        return false;
    }
}

/* One CreateTopics request for every topic in specs. Returns 0 when all were created,
 * 1 when an error is worth a retry, -1 otherwise. already_ok: an existing topic counts as
 * created (a retry after a lost answer). */
static int create_topics_once(struct tg_harness_kafka *kf, const struct topic_spec *specs,
                              size_t n, bool already_ok)
{
    char errstr[512];
    rd_kafka_NewTopic_t **nts = calloc(n, sizeof *nts);
    rd_kafka_queue_t *queue = rd_kafka_queue_new(kf->rk);
    rd_kafka_AdminOptions_t *options =
        rd_kafka_AdminOptions_new(kf->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_event_t *ev = NULL;
    int rc = -1;

    if (!nts || !queue || !options)
        goto cleanup;
    if (rd_kafka_AdminOptions_set_request_timeout(options, TOPIC_TIMEOUT_MS / 2, errstr,
                                                  sizeof errstr) ||
        rd_kafka_AdminOptions_set_operation_timeout(options, TOPIC_TIMEOUT_MS / 2, errstr,
                                                    sizeof errstr)) {
        klog("admin options: %s", errstr);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        nts[i] = rd_kafka_NewTopic_new(specs[i].name, specs[i].partitions, 1, errstr,
                                       sizeof errstr);
        if (!nts[i]) {
            klog("topic %s: %s", specs[i].name, errstr);
            goto cleanup;
        }
        for (const char *const *c = specs[i].configs; c && *c; c++) {
            char *key = strdup(*c);
            char *eq = key ? strchr(key, '=') : NULL;
            rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__INVALID_ARG;
            if (eq) {
                *eq = '\0';
                err = rd_kafka_NewTopic_set_config(nts[i], key, eq + 1);
            }
            free(key);
            if (err) {
                klog("topic %s: bad config '%s' (want key=value)", specs[i].name, *c);
                goto cleanup;
            }
        }
    }

    rd_kafka_CreateTopics(kf->rk, nts, n, options, queue);
    ev = rd_kafka_queue_poll(queue, TOPIC_TIMEOUT_MS);
    if (!ev) {
        klog("CreateTopics: no answer within %d ms", TOPIC_TIMEOUT_MS);
        rc = 1;
        goto cleanup;
    }
    if (rd_kafka_event_error(ev)) {
        rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
        klog("CreateTopics: %s", rd_kafka_event_error_string(ev));
        rc = create_retriable(err) ? 1 : -1;
        goto cleanup;
    }
    const rd_kafka_CreateTopics_result_t *result = rd_kafka_event_CreateTopics_result(ev);
    size_t n_results = 0;
    const rd_kafka_topic_result_t **results = rd_kafka_CreateTopics_result_topics(result,
                                                                                &n_results);
    rc = 0;
    for (size_t i = 0; i < n_results; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR ||
            (already_ok && err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS))
            continue;
        const char *msg = rd_kafka_topic_result_error_string(results[i]);
        klog("topic %s: %s (%s)", rd_kafka_topic_result_name(results[i]),
             rd_kafka_err2name(err), msg ? msg : "");
        if (create_retriable(err)) {
            if (rc == 0)
                rc = 1;
        } else {
            rc = -1;
        }
    }

cleanup:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (nts) {
        for (size_t i = 0; i < n; i++)
            if (nts[i])
                rd_kafka_NewTopic_destroy(nts[i]);
        free(nts);
    }
    if (options)
        rd_kafka_AdminOptions_destroy(options);
    if (queue)
        rd_kafka_queue_destroy(queue);
    return rc;
}

/* CreateTopics (retried while the errors are transient), then waits until every partition of
 * every topic has a leader: a producer that starts right after must find them. */
static int create_topics(struct tg_harness_kafka *kf, const struct topic_spec *specs, size_t n,
                         int timeout_ms)
{
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    bool retried = false;
    for (;;) {
        int rc = create_topics_once(kf, specs, n, retried);
        if (rc == 0)
            break;
        if (rc < 0 || tg_harness_now_ms() >= deadline)
            return -1;
        retried = true;
        harness__sleep_ms(200);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t left = deadline - tg_harness_now_ms();
        if (wait_ready(kf, specs[i].name, left > 0 ? (int)left : 1) != 0) {
            klog("topic %s: partitions without a leader after %d ms", specs[i].name,
                 timeout_ms);
            return -1;
        }
    }
    return 0;
}

int tg_harness_kafka_create_topic(struct tg_harness_kafka *kf, const char *topic,
                                  int partitions, const char *const configs[])
{
    const struct topic_spec spec = {topic, partitions, configs};
    return create_topics(kf, &spec, 1, TOPIC_TIMEOUT_MS);
}

/* True when the broker answered that it has no such topic: an answer, not a pause to wait out
 * (no auto-creation will make one appear). */
static bool topic_unknown(struct tg_harness_kafka *kf, const char *topic)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(kf->rk, topic, NULL);
    bool unknown = false;
    if (rkt && rd_kafka_metadata(kf->rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        unknown = md->topic_cnt == 1 &&
                  md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return unknown;
}

int tg_harness_kafka_partitions(struct tg_harness_kafka *kf, const char *topic)
{
    int partitions = -1;
    int64_t deadline = tg_harness_now_ms() + METADATA_TIMEOUT_MS;
    do {
        if (metadata_ready(kf, topic, 2000, &partitions))
            return partitions;
        if (topic_unknown(kf, topic))
            return -1;
        harness__sleep_ms(50);
    } while (tg_harness_now_ms() < deadline);
    return -1;
}

/* ------------------------------------------------------------------------------------------
 * The broker process
 */

/* Starts the JVM on kf's ports and waits until it answers metadata with every partition it
 * has led. Returns 0, 1 when a port was taken (try others), -1 on any other failure. */
static int launch(struct tg_harness_kafka *kf)
{
    char port[16], cport[16];
    snprintf(port, sizeof port, "%d", kf->port);
    snprintf(cport, sizeof cport, "%d", kf->controller_port);
    const char *argv[] = {kf->launcher, "run", kf->dir, port, cport, kf->extra_path, NULL};
    off_t offset = harness__file_size(kf->log_path);
    int64_t t0 = tg_harness_now_ms();

    kf->proc = tg_harness_proc_start(kf->dir, "kafka", argv, NULL, 0);
    if (!kf->proc)
        return -1;
    int rc = wait_ready(kf, NULL, START_TIMEOUT_MS);
    if (rc == 0) {
        klog("broker on %s ready in %lld ms", kf->bootstrap,
             (long long)(tg_harness_now_ms() - t0));
        return 0;
    }
    char why[256];
    if (rc > 0)
        snprintf(why, sizeof why, "kafka: the broker exited during startup");
    else
        snprintf(why, sizeof why, "kafka: the broker on %s did not answer metadata within %d ms",
                 kf->bootstrap, START_TIMEOUT_MS);
    return harness__start_failed(&kf->proc, kf->log_path, offset, STOP_TIMEOUT_MS, why);
}

static void kafka_free(struct tg_harness_kafka *kf)
{
    if (kf->rk)
        rd_kafka_destroy(kf->rk);
    free(kf->log_path);
    free(kf->launcher);
    free(kf->extra_path);
    free(kf);
}

static int write_extra(struct tg_harness_kafka *kf, const char *extra_properties)
{
    kf->extra_path = harness__asprintf("%s/extra.properties", kf->dir);
    if (!kf->extra_path)
        return -1;
    FILE *f = fopen(kf->extra_path, "we");
    if (!f || fputs(extra_properties, f) < 0 || fputc('\n', f) == EOF) {
        klog("cannot write %s: %s", kf->extra_path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    if (fclose(f) != 0) {
        klog("cannot write %s: %s", kf->extra_path, strerror(errno));
        return -1;
    }
    return 0;
}

struct tg_harness_kafka *tg_harness_kafka_start(int telemetry_partitions, unsigned flags)
{
    return tg_harness_kafka_start_with(telemetry_partitions, flags, NULL);
}

struct tg_harness_kafka *tg_harness_kafka_start_with(int telemetry_partitions, unsigned flags,
                                                     const char *extra_properties)
{
    struct tg_harness_kafka *kf = calloc(1, sizeof *kf);
    if (!kf)
        return NULL;
    if (telemetry_partitions <= 0)
        telemetry_partitions = TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS;
    const char *launcher = getenv("TG_KAFKA_BROKER");
    kf->launcher = strdup(launcher && *launcher ? launcher : TG_HARNESS_KAFKA_BROKER);
    kf->dir = tg_harness_tmpdir_new("kafka");
    if (kf->dir)
        kf->log_path = harness__asprintf("%s/kafka.stderr", kf->dir);
    if (!kf->launcher || !kf->dir || !kf->log_path)
        goto fail;
    if (extra_properties && write_extra(kf, extra_properties) != 0)
        goto fail;

    int rc = 1;
    for (int attempt = 1; attempt <= PORT_ATTEMPTS && rc == 1; attempt++) {
        kf->port = harness__port_source();
        kf->controller_port = harness__port_source();
        if (kf->port < 0 || kf->controller_port < 0 || kf->port == kf->controller_port)
            continue;
        snprintf(kf->bootstrap, sizeof kf->bootstrap, HARNESS_LOOPBACK ":%d", kf->port);
        if (kf->rk)
            rd_kafka_destroy(kf->rk);
        kf->rk = client_new(kf->bootstrap);
        if (!kf->rk)
            goto fail;
        /* A failed bind leaves a formatted data dir behind whose controller port is stale. */
        char *data = harness__asprintf("%s/data", kf->dir);
        if (data)
            tg_harness_rmtree(data);
        free(data);
        rc = launch(kf);
        if (rc == 1)
            klog("port %d or %d was taken before the broker bound it; trying others", kf->port,
                 kf->controller_port);
    }
    if (rc != 0)
        goto fail;

    if (!(flags & TG_HARNESS_KAFKA_NO_TOPICS)) {
        static const char *const compact[] = {"cleanup.policy=compact", NULL};
        const struct topic_spec topics[] = {
            {"telemetry", telemetry_partitions, NULL},
            {"telemetry.dlq", 3, NULL},
            {"telemetry.anomalies", 6, NULL},
            {"telemetry.agg.1m", 6, NULL},
            {"telemetry.worker.state", telemetry_partitions, compact},
        };
        if (create_topics(kf, topics, sizeof topics / sizeof topics[0], TOPIC_TIMEOUT_MS) !=
            0) {
            harness__print_log("kafka log", kf->log_path, 0);
            goto fail;
        }
    }
    return kf;

fail:
    if (kf->dir)
        klog("start failed; see %s", kf->dir);
    harness__proc_end(&kf->proc, STOP_TIMEOUT_MS);
    free(kf->dir); /* the registry has its own copy: the dir is reported and kept */
    kafka_free(kf);
    return NULL;
}

const char *tg_harness_kafka_bootstrap(const struct tg_harness_kafka *kf)
{
    return kf->bootstrap;
}

int tg_harness_kafka_port(const struct tg_harness_kafka *kf)
{
    return kf->port;
}

int tg_harness_kafka_controller_port(const struct tg_harness_kafka *kf)
{
    return kf->controller_port;
}

const char *tg_harness_kafka_dir(const struct tg_harness_kafka *kf)
{
    return kf->dir;
}

const char *tg_harness_kafka_log_path(const struct tg_harness_kafka *kf)
{
    return kf->log_path;
}

struct tg_harness_proc *tg_harness_kafka_proc(const struct tg_harness_kafka *kf)
{
    return kf->proc;
}

bool tg_harness_kafka_running(struct tg_harness_kafka *kf)
{
    return kf->proc && tg_harness_proc_running(kf->proc);
}

int tg_harness_kafka_stop(struct tg_harness_kafka *kf)
{
    if (!kf->proc) {
        klog("stop: the broker is not running");
        return -1;
    }
    int64_t t0 = tg_harness_now_ms();
    bool was_running = tg_harness_proc_running(kf->proc);
    int status = harness__proc_end(&kf->proc, STOP_TIMEOUT_MS);
    /* The JVM answers SIGTERM with its shutdown hooks (Kafka's controlled shutdown) and then
     * exits with 143; anything but a SIGKILL means it shut down by itself. */
    bool clean = was_running && status != -1 &&
                 (WIFEXITED(status) || (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM));
    if (!clean) {
        klog("stop: the broker %s (wait status %d)",
             was_running ? "had to be killed" : "had already exited", status);
        return -1;
    }
    klog("broker on %s stopped in %lld ms", kf->bootstrap,
         (long long)(tg_harness_now_ms() - t0));
    return 0;
}

int tg_harness_kafka_kill9(struct tg_harness_kafka *kf)
{
    if (!kf->proc || tg_harness_proc_signal(kf->proc, SIGKILL) != 0) {
        klog("kill -9: the broker is not running");
        return -1;
    }
    int rc = tg_harness_proc_wait(kf->proc, KILL_WAIT_MS, NULL);
    tg_harness_proc_destroy(kf->proc);
    kf->proc = NULL;
    return rc;
}

int tg_harness_kafka_restart(struct tg_harness_kafka *kf)
{
    if (kf->proc)
        tg_harness_kafka_stop(kf);
    int rc = launch(kf);
    if (rc != 0) {
        klog("could not restart the broker on ports %d/%d%s", kf->port, kf->controller_port,
             rc == 1 ? ": a port was taken meanwhile" : "");
        if (rc == 1)
            harness__print_log("kafka log", kf->log_path, 0);
        return -1;
    }
    return 0;
}

void tg_harness_kafka_destroy(struct tg_harness_kafka *kf)
{
    if (!kf)
        return;
    /* The client first: destroying it is quick while the broker still answers. */
    if (kf->rk) {
        rd_kafka_destroy(kf->rk);
        kf->rk = NULL;
    }
    harness__proc_end(&kf->proc, STOP_TIMEOUT_MS);
    tg_harness_tmpdir_done(kf->dir);
    kafka_free(kf);
}
